"""The model registry: the store, its views, champion/challenger promotion and the model card."""
