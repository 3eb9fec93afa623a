"""Converters: trained model + target + calibration -> an artifact on disk and a report.

One private module per target family (``_tflite``, ``_onnx``, ``_openvino``).
TensorFlow, tf2onnx and NNCF are imported inside the converter functions only;
the device path never imports this package.
"""
