"""The console's instance index: counts, filters and server-side paging (no server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from engine import WorkflowStatus
from engine.http.console._index import InstanceIndex, InstanceSummary, PageQuery

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def summary(
    n: int, status: WorkflowStatus = WorkflowStatus.COMPLETED, name: str = "order"
) -> InstanceSummary:
    return InstanceSummary(
        instance_id=f"i-{n:06d}",
        name=name,
        status=status,
        created_at=T0 + timedelta(seconds=n),
        last_updated_at=T0 + timedelta(seconds=n + 1),
    )


def ids(index: InstanceIndex, **query: object) -> list[str]:
    return [s.instance_id for s in index.page(PageQuery(**query)).items]  # type: ignore[arg-type]


class TestInstanceIndex:
    def test_pages_newest_first_by_default(self):
        """Without filters a page is a slice of creation order, newest first, with the total."""
        index = InstanceIndex()
        for n in range(10):
            index.put(summary(n))
        page = index.page(PageQuery(offset=3, limit=4))
        assert (["i-000006", "i-000005", "i-000004", "i-000003"], 10) == (
            [s.instance_id for s in page.items], page.total
        )
        assert ["i-000000", "i-000001"] == ids(index, limit=2, newest_first=False)

    def test_a_status_change_replaces_the_summary_and_moves_the_counts(self):
        """Putting an instance again replaces it; counts follow its status."""
        index = InstanceIndex()
        index.put(summary(1, WorkflowStatus.RUNNING))
        index.put(summary(2, WorkflowStatus.RUNNING))
        index.put(summary(1, WorkflowStatus.FAILED))
        counts = index.counts()
        assert (2, 1, 1) == (len(index), counts["RUNNING"], counts["FAILED"])
        assert WorkflowStatus.FAILED == index.get("i-000001").status  # type: ignore[union-attr]

    def test_filters_by_status_workflow_and_id_text(self):
        """Statuses, workflow name and a case-insensitive id search combine; total counts all
        matches, not just the page."""
        index = InstanceIndex()
        for n in range(30):
            status = WorkflowStatus.RUNNING if n % 3 == 0 else WorkflowStatus.COMPLETED
            index.put(summary(n, status, name="order" if n < 20 else "refund"))
        page = index.page(PageQuery(statuses=frozenset({WorkflowStatus.RUNNING}), limit=2))
        assert (["i-000027", "i-000024"], 10) == ([s.instance_id for s in page.items], page.total)
        assert ["i-000018", "i-000015"] == ids(
            index, statuses=frozenset({WorkflowStatus.RUNNING}), workflow="order", limit=2
        )
        assert ["i-000012"] == ids(index, search="I-00001", offset=7, limit=1)
        assert {"order": 20, "refund": 10} == index.workflow_names()

    def test_purged_instances_leave_the_index(self):
        """A removed instance leaves the order, the counts and the names."""
        index = InstanceIndex()
        index.put(summary(1, name="once"))
        index.put(summary(2))
        index.remove("i-000001")
        index.remove("unknown")
        assert (["i-000002"], {"order": 1}, 1) == (
            ids(index), index.workflow_names(), index.counts()["COMPLETED"]
        )

    def test_deep_pages_of_a_hundred_thousand_instances(self):
        """100,000 instances page from the end as from the start, filtered or not."""
        index = InstanceIndex()
        failed, completed = WorkflowStatus.FAILED, WorkflowStatus.COMPLETED
        for n in range(100_000):
            index.put(summary(n, failed if n % 1000 == 0 else completed))
        assert ["i-000001", "i-000000"] == ids(index, offset=99_998, limit=50)
        page = index.page(PageQuery(statuses=frozenset({WorkflowStatus.FAILED}), offset=98))
        assert (["i-001000", "i-000000"], 100) == ([s.instance_id for s in page.items], page.total)
        assert 500 == index.page(PageQuery(limit=10_000)).limit
