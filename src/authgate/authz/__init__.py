"""The ext_authz servicer: CheckRequest -> RequestContext -> Decision -> CheckResponse."""
