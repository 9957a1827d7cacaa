from thaw_core.service import main

from thaw_snapshots.service import SnapshotsService

main(SnapshotsService)
