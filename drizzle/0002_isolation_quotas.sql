ALTER TABLE "hosts" ADD COLUMN "isolation" text DEFAULT 'namespace' NOT NULL;--> statement-breakpoint
ALTER TABLE "sandboxes" ADD COLUMN "runtime" text DEFAULT '' NOT NULL;--> statement-breakpoint
ALTER TABLE "sandboxes" ADD COLUMN "isolation" text;--> statement-breakpoint
ALTER TABLE "sandboxes" ADD COLUMN "snapshot_bytes" bigint DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "teams" ADD COLUMN "min_isolation" text;--> statement-breakpoint
ALTER TABLE "teams" ADD COLUMN "quotas" jsonb DEFAULT '{}'::jsonb NOT NULL;