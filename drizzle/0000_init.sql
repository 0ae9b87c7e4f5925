CREATE TABLE "api_keys" (
	"id" text PRIMARY KEY NOT NULL,
	"team_id" text NOT NULL,
	"name" text NOT NULL,
	"prefix" text NOT NULL,
	"hash" text NOT NULL,
	"is_admin" boolean DEFAULT false NOT NULL,
	"last_used_at" timestamp with time zone,
	"revoked_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "hosts" (
	"id" text PRIMARY KEY NOT NULL,
	"address" text NOT NULL,
	"token_sealed" text NOT NULL,
	"status" text DEFAULT 'active' NOT NULL,
	"runtime" text DEFAULT '' NOT NULL,
	"capacity_vcpus" integer DEFAULT 0 NOT NULL,
	"capacity_memory_mb" integer DEFAULT 0 NOT NULL,
	"capacity_max_sandboxes" integer DEFAULT 0 NOT NULL,
	"pause_to_disk" boolean DEFAULT false NOT NULL,
	"templates" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"agent_version" text DEFAULT '' NOT NULL,
	"envd_version" text DEFAULT '' NOT NULL,
	"consecutive_failures" integer DEFAULT 0 NOT NULL,
	"last_seen_at" timestamp with time zone,
	"last_error" text,
	"version" integer DEFAULT 0 NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "leases" (
	"name" text PRIMARY KEY NOT NULL,
	"holder" text NOT NULL,
	"expires_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "sandbox_events" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"sandbox_id" text NOT NULL,
	"team_id" text NOT NULL,
	"type" text NOT NULL,
	"from_state" text,
	"to_state" text,
	"actor" text DEFAULT 'api' NOT NULL,
	"detail" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "sandboxes" (
	"id" text PRIMARY KEY NOT NULL,
	"team_id" text NOT NULL,
	"host_id" text,
	"template" text NOT NULL,
	"state" text NOT NULL,
	"vcpus" integer NOT NULL,
	"memory_mb" integer NOT NULL,
	"timeout_sec" integer NOT NULL,
	"on_timeout" text DEFAULT 'kill' NOT NULL,
	"end_at" timestamp with time zone,
	"metadata" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"envd_token_sealed" text NOT NULL,
	"envd_version" text DEFAULT '' NOT NULL,
	"stop_reason" text,
	"error" text,
	"started_at" timestamp with time zone,
	"stopped_at" timestamp with time zone,
	"version" integer DEFAULT 0 NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "teams" (
	"id" text PRIMARY KEY NOT NULL,
	"name" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "api_keys" ADD CONSTRAINT "api_keys_team_id_teams_id_fk" FOREIGN KEY ("team_id") REFERENCES "public"."teams"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "sandboxes" ADD CONSTRAINT "sandboxes_team_id_teams_id_fk" FOREIGN KEY ("team_id") REFERENCES "public"."teams"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "sandboxes" ADD CONSTRAINT "sandboxes_host_id_hosts_id_fk" FOREIGN KEY ("host_id") REFERENCES "public"."hosts"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "api_keys_hash_idx" ON "api_keys" USING btree ("hash");--> statement-breakpoint
CREATE INDEX "api_keys_team_idx" ON "api_keys" USING btree ("team_id");--> statement-breakpoint
CREATE UNIQUE INDEX "hosts_address_idx" ON "hosts" USING btree ("address");--> statement-breakpoint
CREATE INDEX "sandbox_events_sandbox_idx" ON "sandbox_events" USING btree ("sandbox_id","id");--> statement-breakpoint
CREATE INDEX "sandboxes_team_created_idx" ON "sandboxes" USING btree ("team_id","created_at","id");--> statement-breakpoint
CREATE INDEX "sandboxes_host_state_idx" ON "sandboxes" USING btree ("host_id","state");--> statement-breakpoint
CREATE INDEX "sandboxes_state_end_idx" ON "sandboxes" USING btree ("state","end_at");