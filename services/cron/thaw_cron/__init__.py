"""thaw cron service."""
