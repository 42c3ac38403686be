"""DICOM ingest: the C-STORE listener that archives each instance and publishes its event."""
