/**
 * The envd protocol version Wrenn's envd implements. The official SDKs gate features on it
 * (metadata needs ≥ 0.6.2, watch flags ≥ 0.6.4), and envd reports it in `X-Envd-Version`.
 */
export const ENVD_VERSION = "0.6.13";
