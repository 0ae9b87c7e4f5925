CREATE TABLE "commands" (
	"team_id" text NOT NULL,
	"sandbox_id" text NOT NULL,
	"command_id" text NOT NULL,
	"command_line" text NOT NULL,
	"cmd" text NOT NULL,
	"args" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"user" text DEFAULT '' NOT NULL,
	"cwd" text DEFAULT '' NOT NULL,
	"pid" integer DEFAULT 0 NOT NULL,
	"started_at" timestamp (3) with time zone NOT NULL,
	"ended_at" timestamp (3) with time zone,
	"exit_code" integer,
	"error" text DEFAULT '' NOT NULL,
	"stdout_head" text DEFAULT '' NOT NULL,
	"stdout_tail" text DEFAULT '' NOT NULL,
	"stdout_bytes" bigint DEFAULT 0 NOT NULL,
	"stderr_head" text DEFAULT '' NOT NULL,
	"stderr_tail" text DEFAULT '' NOT NULL,
	"stderr_bytes" bigint DEFAULT 0 NOT NULL,
	"background" boolean DEFAULT false NOT NULL,
	"callback_url" text,
	"callback_state" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"search" "tsvector" GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, left(command_line, 8192) || ' ' || left(stdout_head, 32768) || ' ' || left(stdout_tail, 32768) || ' ' || left(stderr_head, 32768) || ' ' || left(stderr_tail, 32768))) STORED,
	CONSTRAINT "commands_sandbox_id_command_id_pk" PRIMARY KEY("sandbox_id","command_id")
);
--> statement-breakpoint
ALTER TABLE "commands" ADD CONSTRAINT "commands_team_id_teams_id_fk" FOREIGN KEY ("team_id") REFERENCES "public"."teams"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "commands_team_started_idx" ON "commands" USING btree ("team_id","started_at");--> statement-breakpoint
CREATE INDEX "commands_sandbox_started_idx" ON "commands" USING btree ("sandbox_id","started_at");--> statement-breakpoint
CREATE INDEX "commands_search_idx" ON "commands" USING gin ("search");--> statement-breakpoint
CREATE INDEX "commands_created_idx" ON "commands" USING btree ("created_at");