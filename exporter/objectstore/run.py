"""A run whose `--out` is a bucket: the store opened and checked (bucket, credentials) before
any API request, the lease taken and kept, the pipeline run on the StoreArchive, the discovery
state written back, and everything released, whatever happens."""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import anyio

from exporter.config import Settings
from exporter.errors import FatalError
from exporter.progress import Reporter
from exporter.stats import RunResult, Stats, new_run_id

log = logging.getLogger("exporter.objectstore")


async def export_to_store(
    settings: Settings, reporter: Reporter | None = None, **kw: Any
) -> RunResult:
    """The whole run against `settings.store`; LeaseHeld (exit 75) if another run holds it."""
    from exporter.objectstore.archive import StoreArchive
    from exporter.objectstore.client import open_store
    from exporter.objectstore.lease import Lease
    from exporter.pipeline import Run

    target = settings.store
    assert target is not None
    async with open_store(
        target, settings.retry, settings.timeouts, settings.concurrency + 4
    ) as store:
        try:
            await store.check_bucket()
        except FatalError as exc:
            return _stopped(exc)
        run_id = kw.pop("run_id", None) or new_run_id()
        lease = Lease(store, run_id, settings.lock_lease)
        try:
            await lease.acquire()
        except FatalError as exc:
            return _stopped(exc)
        archive = StoreArchive(store, **kw.pop("archive_options", {}))
        try:
            run = Run(settings, reporter=reporter, archive=archive, manifest=archive.manifest, **kw)
            run.run_id = archive.manifest.run_id = run_id
            run._result.run_id = run_id
            store.on_retry = run._retry_scheduled

            def lost(exc: FatalError) -> None:
                if run._scope is not None:
                    run._stop(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(lease.keep, lost)
                result = await run.run()
                tg.cancel_scope.cancel()
            if archive.state is not None and archive.state.dirty:
                try:
                    with anyio.CancelScope(shield=True):
                        await archive.state.write(store)
                except FatalError as exc:
                    log.error("the discovery state could not be written: %s", exc.message)
                    result.fatal = result.fatal or exc
            return result
        finally:
            with anyio.CancelScope(shield=True):
                await lease.release()
            archive.close()


def destination(settings: Settings) -> tuple[Any, AbstractContextManager[object]]:
    """The export and the lock for `--out`: DIR's flock around the run, or a bucket's lease,
    taken inside it."""
    if settings.store is not None:
        return export_to_store, nullcontext()
    from exporter.lock import DirLock
    from exporter.pipeline import export

    settings.out_dir.mkdir(parents=True, exist_ok=True)
    return export, DirLock(settings.out_dir)


def _stopped(exc: FatalError) -> RunResult:
    log.error("stopping the run: %s", exc.message)
    return RunResult(run_id=new_run_id(), stats=Stats(), fatal=exc)
