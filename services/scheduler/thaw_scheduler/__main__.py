from thaw_core.service import main

from thaw_scheduler.service import SchedulerService

main(SchedulerService)
