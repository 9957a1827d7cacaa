from thaw_core.service import main

from thaw_cron.service import CronService

main(CronService)
