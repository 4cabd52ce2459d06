"""Dataset handling: verified downloads (download), the IDX file format (idx), and the
conversion into the NHWC float32 arrays every framework trains on (preprocess)."""
