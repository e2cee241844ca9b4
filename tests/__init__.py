"""mbert-edge tests: runtime, export, and the default model against independent references."""
