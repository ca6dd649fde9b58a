"""How far to trust a posterior: the prior's reach, the pixels the data pin, calibrated intervals.

    discrepancy   the prior's reach residual r: x = G(w) + r, its likelihood and its draws given y
    leverage      which clean pixels a linear f pins, and which it leaves to the prior
    conformal     per-pixel intervals recalibrated on validation images (conformal risk control)
    calibrate     runs the posterior on validation images and fits a calibration (``brgm calibrate``)
"""
