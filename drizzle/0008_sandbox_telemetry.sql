CREATE TABLE "sandbox_logs" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"sandbox_id" text NOT NULL,
	"ts" timestamp (3) with time zone NOT NULL,
	"level" text NOT NULL,
	"message" text NOT NULL,
	"fields" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"epoch" text NOT NULL,
	"seq" bigint NOT NULL
);
--> statement-breakpoint
CREATE TABLE "sandbox_metrics" (
	"sandbox_id" text NOT NULL,
	"resolution_sec" smallint DEFAULT 0 NOT NULL,
	"ts" timestamp (3) with time zone NOT NULL,
	"cpu_count" integer NOT NULL,
	"cpu_used_pct" double precision NOT NULL,
	"mem_used" bigint NOT NULL,
	"mem_total" bigint NOT NULL,
	"mem_cache" bigint NOT NULL,
	"disk_used" bigint NOT NULL,
	"disk_total" bigint NOT NULL,
	"sample_count" integer DEFAULT 1 NOT NULL,
	CONSTRAINT "sandbox_metrics_sandbox_id_resolution_sec_ts_pk" PRIMARY KEY("sandbox_id","resolution_sec","ts")
);
--> statement-breakpoint
CREATE TABLE "telemetry_cursors" (
	"host_id" text PRIMARY KEY NOT NULL,
	"epoch" text NOT NULL,
	"after_seq" bigint NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "telemetry_cursors" ADD CONSTRAINT "telemetry_cursors_host_id_hosts_id_fk" FOREIGN KEY ("host_id") REFERENCES "public"."hosts"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "sandbox_logs_sandbox_ts_idx" ON "sandbox_logs" USING btree ("sandbox_id","ts");--> statement-breakpoint
CREATE INDEX "sandbox_logs_ts_idx" ON "sandbox_logs" USING btree ("ts");--> statement-breakpoint
CREATE UNIQUE INDEX "sandbox_logs_source_idx" ON "sandbox_logs" USING btree ("epoch","seq");--> statement-breakpoint
CREATE INDEX "sandbox_metrics_age_idx" ON "sandbox_metrics" USING btree ("resolution_sec","ts");