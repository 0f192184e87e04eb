"""Feature visualization (Olah, Mordvintsev, Schubert, Distill 2017): images optimized to drive a unit.

The recipe is Lucid's: the image is a Fourier spectrum scaled by 1/frequency with decorrelated colour
(`param`), seen through random jitter, scale and rotation at every step (`transforms`), and optimized with
Adam for a fixed number of steps to maximize (or minimize) the unit's mean activation, optionally with a
diversity term on the layer's Gram matrices (`render`). `check` says whether it worked: the image's activation
of its unit relative to the unit's best probe-set image, and how selectively it drives that unit. `output`
writes the PNGs and featviz.json; `cli` holds the `featviz` subcommand.
"""
