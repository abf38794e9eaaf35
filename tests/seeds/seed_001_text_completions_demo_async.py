# shared/seeds/001: text_completions_demo_async.py; only the g4f import line changed.
import asyncio
from core import AsyncClient

async def main():
    client = AsyncClient()

    response = await client.chat.completions.create(
        model="gpt-4o",
        messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "how does a court case get to the Supreme Court?"}
        ]
    )

    print(response.choices[0].message.content)

asyncio.run(main())
