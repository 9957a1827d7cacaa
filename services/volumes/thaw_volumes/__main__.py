from thaw_core.service import main

from thaw_volumes.service import VolumesService

main(VolumesService)
