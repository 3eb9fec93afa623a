"""The conversion pipeline every target shares: calibration data, preprocessing recipes, validation."""
