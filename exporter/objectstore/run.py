"""A run whose `--out` is a bucket: the store opened and checked (bucket, credentials, conditional
writes honoured) before any API request, the lease taken and kept, the pipeline run on the
StoreArchive, the discovery state written back, and everything released, whatever happens."""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from typing import Any

import anyio

from exporter.config import Settings
from exporter.errors import FatalError
from exporter.progress import Reporter
from exporter.stats import RunResult

log = logging.getLogger("exporter.objectstore")


async def export_to_store(
    settings: Settings, reporter: Reporter | None = None, *, make_run: Any, **kw: Any
) -> RunResult:
    """The whole run against `settings.store`, `make_run(...)` being pipeline.Run (handed
    in: the pipeline sits above this module); LeaseHeld (exit 75) if another run holds it."""
    from exporter.objectstore.archive import StoreArchive
    from exporter.objectstore.client import open_store
    from exporter.objectstore.lease import Lease
    from exporter.objectstore.manifest import StoreManifest
    from exporter.objectstore.state import StoreState

    target = settings.store
    assert target is not None
    async with open_store(
        target, settings.retry, settings.timeouts, settings.concurrency + 4
    ) as store:
        archive = StoreArchive(
            store, StoreManifest, StoreState.read, **kw.pop("archive_options", {})
        )
        lease: Lease | None = None
        try:
            run = make_run(
                settings, reporter=reporter, archive=archive, manifest=archive.manifest, **kw
            )
            archive.manifest.run_id = run.run_id
            # Every retry of the store counts in the run's, from the first request on.
            store.on_retry = run._retry_scheduled
            lease = Lease(store, run.run_id, settings.lock_lease)
            try:
                await store.check_bucket()
                await store.check_conditions()  # the lease below relies on them
                await lease.acquire()
            except FatalError as exc:  # told once, by the command line, as the run's end
                run._result.fatal = exc
                run._result.started = False
                stopped: RunResult = run._result
                return stopped

            def lost(exc: FatalError) -> None:
                if run._scope is not None:
                    run._stop(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(lease.keep, lost)
                result: RunResult = await run.run()
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
            if lease is not None:
                with anyio.CancelScope(shield=True):
                    await lease.release()
            archive.close()


def destination(
    settings: Settings, export: Any, make_run: Any
) -> tuple[Any, AbstractContextManager[object]]:
    """The export and the lock for `--out`: DIR's flock around the run (pipeline.export), or
    a bucket's lease, taken inside the run."""
    if settings.store is not None:
        return partial(export_to_store, make_run=make_run), nullcontext()
    from exporter.lock import DirLock

    settings.out_dir.mkdir(parents=True, exist_ok=True)
    return export, DirLock(settings.out_dir)
