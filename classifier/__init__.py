"""Classification: the rebuilt ResNet50, DICOM-to-tensor preprocessing and the batch worker."""
