"""Network Dissection and CAM in plain PyTorch: no Django here (the service and workers call in)."""
