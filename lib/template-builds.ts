/**
 * The metadata key an agent puts on a template build's sandbox (its value: the build id). The build
 * sandbox belongs to the agent, not to a row in the edge's database: a restarted agent ends it, and
 * the reconcile sweep must not take it for an orphan.
 */
export const TEMPLATE_BUILD_METADATA = "wrenn.template-build";
