"""Simulation-based calibration of variational families (``elbogap calibrate``): :mod:`~elbogap.calibration.study`
runs it, :mod:`~elbogap.calibration.stats` tests it, :mod:`~elbogap.calibration.report` writes its tables and
figure."""
