"""Memory units: every MiB figure fwbench writes is 2**20 bytes."""

BYTES_PER_MIB = 1 << 20
KIB_PER_MIB = 1024
