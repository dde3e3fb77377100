"""`vlmr collect`: environments -> labelled, captioned frames in webdataset shards."""
