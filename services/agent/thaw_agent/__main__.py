from thaw_core.service import main

from thaw_agent.service import AgentService

main(AgentService)
