"""The online feature API (`streamflow api`)."""

from streamflow_assets import noise

noise.silence()
