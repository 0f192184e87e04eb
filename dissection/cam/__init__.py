"""Class activation maps (Zhou et al., CVPR 2016), Grad-CAM, and predictions explained through their units.

With a head that is global average pooling + one linear layer,
logit_c = b_c + Σ_k w_k^c · mean_xy f_k(x, y), so the map M_c(x, y) = Σ_k w_k^c f_k(x, y) spreads the class
score over the last feature map: mean M_c + b_c is the logit, and w_k^c · mean f_k is what unit k adds to it.
The head is found by tracing one forward pass, not from architecture names, so every torchvision family with
such a head and any user model built the same way work; models without one (alexnet, vgg, mobilenet_v3) get
Grad-CAM.

`images` reads and normalizes pictures, `heads` finds the head, `maps` computes CAMs, `gradcam` Grad-CAMs,
`units` splits logits into unit contributions, `localize` scores CAM boxes, `cli` holds `cam` and `localize`.
"""
