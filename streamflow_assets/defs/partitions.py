"""The one monthly partitions definition every asset shares.

Calendar months keyed YYYY-MM, from STREAMFLOW_FIRST_MONTH to the last completed month. The first
month is read when the code location is imported: after changing STREAMFLOW_FIRST_MONTH, restart
`dagster dev` (or reload the code location).
"""

import dagster as dg

from streamflow_assets.settings import Settings

monthly_partitions = dg.MonthlyPartitionsDefinition(
    start_date=Settings.from_env().first_month.strftime("%Y-%m"), fmt="%Y-%m"
)
