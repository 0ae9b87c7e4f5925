CREATE TABLE "snapshots" (
	"id" text PRIMARY KEY NOT NULL,
	"team_id" text NOT NULL,
	"source_sandbox_id" text NOT NULL,
	"host_id" text,
	"template" text NOT NULL,
	"runtime" text DEFAULT '' NOT NULL,
	"keeps_memory" boolean DEFAULT false NOT NULL,
	"vcpus" integer NOT NULL,
	"memory_mb" integer NOT NULL,
	"size_bytes" bigint DEFAULT 0 NOT NULL,
	"name" text,
	"state" text NOT NULL,
	"error" text,
	"deleted_at" timestamp with time zone,
	"version" integer DEFAULT 0 NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "snapshots" ADD CONSTRAINT "snapshots_team_id_teams_id_fk" FOREIGN KEY ("team_id") REFERENCES "public"."teams"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "snapshots" ADD CONSTRAINT "snapshots_host_id_hosts_id_fk" FOREIGN KEY ("host_id") REFERENCES "public"."hosts"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "snapshots_team_created_idx" ON "snapshots" USING btree ("team_id","created_at","id");--> statement-breakpoint
CREATE INDEX "snapshots_host_state_idx" ON "snapshots" USING btree ("host_id","state");--> statement-breakpoint
CREATE UNIQUE INDEX "snapshots_team_name_idx" ON "snapshots" USING btree ("team_id","name") WHERE "snapshots"."name" is not null and "snapshots"."state" in ('creating', 'ready');