"""The CAM gallery of a run: predictions on sample probe images, each with its CAM overlay and the units
that contribute most to the predicted class, joined with the run's unit labels. Each unit is stored with
its 0-based `channel` and NetDissect's 1-based `unit` number (channel + 1), the number pages show."""

from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image

from dissection.broden import load_probe_set
from dissection.cam.heads import detect_gap_head
from dissection.cam.images import preprocess
from dissection.cam.maps import class_activation_maps
from dissection.cam.units import UnitLabel, explain_predictions
from dissection.errors import DissectionError
from dissection.networks import checkpoint_classes
from dissection.overlay import render_overlay
from runs import services
from runs.models import DissectionRun
from runs.networks import network_model
from runs.storage import local_copy, probe_set_root, store_bytes

TOP_UNITS = 3


def gallery_build(*, run_id: int, images: int = 8) -> str:
    """Write runs/<id>/cam/<n>.png and runs/<id>/cam/gallery.json; returns the JSON's storage key."""
    run = DissectionRun.objects.select_related("network", "probe_set").get(pk=run_id)
    network, probe_set = run.network, run.probe_set
    assert network is not None and probe_set is not None, "cam_gallery_request checks the run has both"
    model = network_model(network)
    probe = load_probe_set(probe_set_root(probe_set))
    indices = np.unique(np.linspace(0, len(probe) - 1, min(images, len(probe))).round().astype(int))
    pictures = [Image.fromarray(probe.load_image(int(i))) for i in indices]
    batch = preprocess(pictures, None)
    try:
        head = detect_gap_head(model, batch[:1])
    except DissectionError as exc:
        services.run_set_report(run_id=run_id, key="cam_error", value=str(exc))
        raise
    labels = {
        unit.channel: UnitLabel(unit.label, unit.concept_category or None, unit.iou, bool(unit.interpretable))
        for unit in run.units.filter(layer=head.feature_layer)
        if unit.label
    }
    classes = checkpoint_classes(local_copy(network.weights)) if network.weights else None
    explained = explain_predictions(model, batch, topk=1, head=head, labels=labels)
    cams = class_activation_maps(model, batch, topk=1, head=head)
    entries = []
    for n, (index, picture) in enumerate(zip(indices, pictures, strict=True)):
        explanation = explained[n][0]
        name = classes[explanation.class_index] if classes else f"class {explanation.class_index}"
        # The page captions each overlay (class, score, units with links); the image carries no text.
        overlay = render_overlay(picture, cams.maps[n, 0])
        buffer = io.BytesIO()
        overlay.save(buffer, format="PNG")
        key = store_bytes(f"runs/{run_id}/cam/{n:03d}.png", buffer.getvalue())
        entries.append(
            {
                "image": probe.images[int(index)].image,
                "overlay": key,
                "prediction": name,
                "probability": explanation.probability,
                "layer": head.feature_layer,
                "width": overlay.width,
                "height": overlay.height,
                "units": [
                    {
                        "unit": u.unit,
                        "channel": u.channel,
                        "contribution": u.contribution,
                        "label": u.label.label if u.label else "",
                        "interpretable": bool(u.label and u.label.interpretable),
                    }
                    for u in explanation.units[:TOP_UNITS]
                ],
            }
        )
    key = store_bytes(f"runs/{run_id}/cam/gallery.json", json.dumps(entries, indent=1).encode())
    services.run_set_report(run_id=run_id, key="cam", value=key)
    return key
