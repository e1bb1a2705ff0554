"""Building blocks of ``online_anomaly``: segmented scans, detectors, combination, state."""
