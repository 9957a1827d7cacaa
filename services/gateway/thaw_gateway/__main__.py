from thaw_core.service import main

from thaw_gateway.service import GatewayService

main(GatewayService)
