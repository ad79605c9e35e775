"""Migration files as the PostgreSQL store reads them (``postgres_migrate.parse_migration``):
which are online, what an online one may hold, and the released ones staying as released."""

from __future__ import annotations

import pytest

from slotfleet.models import StoreError
from slotfleet.store.postgres_migrate import ONLINE_MARK, parse_migration, postgres_migrations
from slotfleet.store.rows import migration_scripts

#: Migrations shipped as transactional (docs/decisions.md, "Migrations and upgrades"): a
#: release applies them in a transaction under the transactional lock, so none may become
#: online (the online steps do not take that lock). 0006 is unused.
RELEASED_TRANSACTIONAL = (1, 2, 3, 4, 5, 7)


def test_released_migrations_stay_transactional_and_both_stores_share_versions() -> None:
    found = postgres_migrations()
    versions = [m.version for m in found]
    assert versions == sorted(set(versions))
    for migration in found:
        if migration.version in RELEASED_TRANSACTIONAL:
            assert not migration.online, migration.name
    assert [version for version, _, _ in migration_scripts("sqlite")] == versions


def test_an_online_migration_is_split_into_its_index_statements_without_comments() -> None:
    migration = parse_migration(
        7,
        "0007_x",
        f"""{ONLINE_MARK}
-- why this index
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS slotfleet_a ON slotfleet_jobs (queue, id)
    WHERE state = 'pending';  -- trailing note
drop index concurrently if exists slotfleet_b;
""",
    )
    assert migration.online
    assert migration.statements == (
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS slotfleet_a ON slotfleet_jobs "
        "(queue, id) WHERE state = 'pending'",
        "drop index concurrently if exists slotfleet_b",
    )


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE INDEX slotfleet_a ON slotfleet_jobs (queue)",  # not concurrent
        "CREATE INDEX CONCURRENTLY slotfleet_a ON slotfleet_jobs (queue)",  # not re-runnable
        "DROP INDEX CONCURRENTLY slotfleet_a",
        "ALTER TABLE slotfleet_jobs ADD COLUMN x text",
    ],
)
def test_an_online_migration_refuses_anything_but_rerunnable_concurrent_index_steps(
    statement: str,
) -> None:
    with pytest.raises(StoreError, match=r"^migration 0007_x is online, so each statement") as e:
        parse_migration(7, "0007_x", f"{ONLINE_MARK}\n{statement};\n")
    assert "\n" not in str(e.value)
    assert statement[:40] in str(e.value)


def test_a_migration_without_the_mark_is_transactional_and_kept_whole() -> None:
    script = "CREATE INDEX a ON slotfleet_jobs (queue);\nDROP INDEX b;\n"
    migration = parse_migration(2, "0002_x", script)
    assert not migration.online
    assert migration.script == script
