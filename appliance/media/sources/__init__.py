"""Video sources: one small interface (:class:`VideoSource`), chosen by config."""
