"""Task heads: post-processing of model outputs (no model code, numpy only)."""
