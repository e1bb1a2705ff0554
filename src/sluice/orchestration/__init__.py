"""Jobs: a jobs file of task DAGs, the embedded scheduler, run history and Airflow export."""
