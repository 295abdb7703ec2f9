"""ECG sources: one module per wire protocol, codec and device model side by side."""
