"""vlmr.calibrate: per-goal temperature and threshold fitting, reward-quality evaluation, reports and plots."""
