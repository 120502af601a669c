"""ExCae's caption self-improvement (CSI): ``python -m experiments.csi --config configs/csi/<name>.yaml``."""
