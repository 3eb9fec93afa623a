"""``edgekit optimize``: search the forms of a model for the fastest within an accuracy budget (Optuna)."""
