/* config.c - the URLs of the parts, from the caller, the environment or the defaults. */
#include <stdlib.h>

#include "core.h"

void au_config_from_env(struct au_config *cfg)
{
	const char *v;

	if (!cfg->queue_url)
		cfg->queue_url = (v = getenv("AU_QUEUE")) && *v ? v : AU_DEFAULT_QUEUE_URL;
	if (!cfg->store_url)
		cfg->store_url = (v = getenv("AU_STORE")) && *v ? v : AU_DEFAULT_STORE_URL;
	if (!cfg->clickhouse_url)
		cfg->clickhouse_url = (v = getenv("AU_CLICKHOUSE")) && *v ? v
								  : AU_DEFAULT_CLICKHOUSE_URL;
}
