from thaw_core.service import main

from thaw_builder.service import BuilderService

main(BuilderService)
