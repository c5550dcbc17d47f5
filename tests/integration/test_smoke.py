from datetime import timedelta

from engine import WorkflowRuntime, WorkflowStatus, when_all


async def test_chain_and_fanout(nats_url, prefix, client):
    wfr = WorkflowRuntime(nats_url, prefix=prefix)

    @wfr.activity
    async def inc(ctx, x: int) -> int:
        return x + 1

    @wfr.workflow
    async def flow(ctx, x: int) -> int:
        a = await ctx.call_activity(inc, input=x)
        rs = await when_all([ctx.call_activity(inc, input=a + i) for i in range(3)])
        await ctx.create_timer(timedelta(seconds=1))
        return sum(rs)

    async with wfr:
        iid = await client.schedule_new_workflow(flow, input=1)
        state = await client.wait_for_workflow_completion(iid, timeout=20)
    assert state.runtime_status is WorkflowStatus.COMPLETED
    assert state.serialized_output == "12"
