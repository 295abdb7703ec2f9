"""The digital twin of each bed: live state now, durable store later."""
