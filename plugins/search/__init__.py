"""MPQ + NAS: exhaustive search over per-layer weight bits and precoder architectures (precoder-compression
paper, section III-B), with one FP pre-training per architecture shared by all its bit configurations."""
