/* config.c - the URLs of the parts, from the caller, the environment or the defaults. */
#include <stdlib.h>

#include "core.h"

/* A variable set but empty is taken as given, not as unset: the open then
 * says the URL is empty, rather than a default server answering for a
 * mistyped deployment (AU_QUEUE=$UNSET_VARIABLE). */
void au_config_from_env(struct au_config *cfg)
{
	const char *v;

	if (!cfg->queue_url)
		cfg->queue_url = (v = getenv("AU_QUEUE")) ? v : AU_DEFAULT_QUEUE_URL;
	if (!cfg->store_url)
		cfg->store_url = (v = getenv("AU_STORE")) ? v : AU_DEFAULT_STORE_URL;
	if (!cfg->clickhouse_url)
		cfg->clickhouse_url = (v = getenv("AU_CLICKHOUSE")) && *v ? v
								  : AU_DEFAULT_CLICKHOUSE_URL;
}
