"""The page the box serves and its JSON API."""
