"""A Python-defined DAG: a shell extract, then Python tasks in their own subprocesses."""
from flowtui import DAG, Bash, task

with DAG("orders_py", schedule="@daily", start_date="2026-01-01", description="Orders, in Python",
         params={"min_rows": 100}, defaults={"retries": 1, "retry_delay": "10s"}, tags=["python"]):
    extract = Bash("extract", "echo 'order_id,amount' > orders_{{ ds_nodash }}.csv.tmp && echo extracted")

    @task(execution_timeout="10m")
    def transform(ctx):
        ctx.log(f"transforming orders for {ctx.ds}")
        for step in range(1, 5):
            ctx.progress(step, 4)
        ctx.metadata(rows=1500, quality=0.99)

    @task
    def check_rows(ctx):
        if ctx.params["min_rows"] > 10_000:
            ctx.skip("row threshold too high for a sample")
        ctx.log("row count is above", ctx.params["min_rows"])

    cleanup = Bash("cleanup", "rm -f orders_{{ ds_nodash }}.csv.tmp", trigger_rule="all_done")

    extract >> transform >> check_rows >> cleanup
