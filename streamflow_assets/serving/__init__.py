"""The online feature API (`streamflow api`)."""
