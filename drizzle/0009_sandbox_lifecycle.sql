ALTER TABLE "sandboxes" ADD COLUMN "keep_memory" boolean DEFAULT true NOT NULL;--> statement-breakpoint
ALTER TABLE "sandboxes" ADD COLUMN "paused_without_memory" boolean DEFAULT false NOT NULL;