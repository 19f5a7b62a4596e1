"""Records (pydantic, versioned), the durable store and the vector memory. Calls no model."""
