"""The alarm engine: conditions in, IEC 60601-1-8 alarm states and signals out."""
