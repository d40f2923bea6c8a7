"""The pull-through cache (``mirror:``, or Distribution's ``proxy.remoteurl``): names mapped to
upstream registries are served from storage, fetched from upstream on a miss (one fetch per
blob however many clients ask), and still served from storage while upstream is down.

Modules: ``config`` (checks, name mapping), ``upstream`` (storage/remote's client, in threads),
``cache`` (manifests, the blob entry point), ``fill`` (one blob's single fetch), ``expiry``
(what ``pyreg gc`` removes), ``metrics``."""
