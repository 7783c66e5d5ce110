"""The prediction server: KServe V1 and Open Inference Protocol V2 over a data plane."""
